"""The model-zoo atlas: every configured model pair at once (`cka.pairs: all`).

`data` turns the pairs' tables into the page's data and the pair-score table, `layout` arranges it (clustered
order, dendrogram, block embedding, best matches), `page` writes the offline HTML page; the overview figure is
`seelike.figures.atlas`, the scores themselves `seelike.analyses.pair_scores`.
"""
