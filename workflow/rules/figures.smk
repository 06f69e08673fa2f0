# Figures, drawn from tables only (so `snakemake fig1` reruns in seconds without a GPU), every one under
# results/figures/{dataset}/ (the analysis dataset), then one target rule per figure (fig1 ... fig13).


rule plot_self_cka:
    input:
        "results/cka/{dataset}/{model}__{model}.parquet",
    output:
        png=report(
            "results/figures/{dataset}/fig1_self_cka/{model}.png",
            caption="../report/fig1.rst",
            category="Fig 1: self-similarity",
            labels={"model": "{model}"},
        ),
        pdf="results/figures/{dataset}/fig1_self_cka/{model}.pdf",
    log:
        "logs/figures/{dataset}/fig1_{model}.log",
    benchmark:
        "results/benchmarks/figures/{dataset}/fig1_{model}.tsv"
    conda:
        "../../envs/plot.yaml"
    script:
        "../../scripts/plot_self_cka.py"


rule plot_cross_cka:
    input:
        cross_cka_table,
    output:
        png=report(
            "results/figures/{dataset}/fig2_cross_cka/{a}__{b}.png",
            caption="../report/fig2.rst",
            category="Fig 2: cross-model CKA",
            labels={"pair": "{a} vs {b}"},
        ),
        pdf="results/figures/{dataset}/fig2_cross_cka/{a}__{b}.pdf",
    log:
        "logs/figures/{dataset}/fig2_{a}__{b}.log",
    benchmark:
        "results/benchmarks/figures/{dataset}/fig2_{a}__{b}.tsv"
    conda:
        "../../envs/plot.yaml"
    script:
        "../../scripts/plot_cross_cka.py"


rule plot_measures:
    input:
        "results/similarity/{dataset}/{a}__{b}.parquet",
    output:
        png=report(
            "results/figures/{dataset}/measures/{a}__{b}.png",
            caption="../report/measures.rst",
            category="Similarity measures",
            labels={"pair": "{a} vs {b}"},
        ),
        pdf="results/figures/{dataset}/measures/{a}__{b}.pdf",
    log:
        "logs/figures/{dataset}/measures_{a}__{b}.log",
    benchmark:
        "results/benchmarks/figures/{dataset}/measures_{a}__{b}.tsv"
    conda:
        "../../envs/plot.yaml"
    script:
        "../../scripts/plot_measures.py"


rule measure_agreement:
    input:
        similarity_tables,
    output:
        csv="results/similarity/{dataset}/agreement.csv",
        png=report(
            "results/figures/{dataset}/measure_agreement.png",
            caption="../report/measure_agreement.rst",
            category="Similarity measures",
        ),
        pdf="results/figures/{dataset}/measure_agreement.pdf",
    log:
        "logs/figures/{dataset}/measure_agreement.log",
    benchmark:
        "results/benchmarks/figures/{dataset}/measure_agreement.tsv"
    conda:
        "../../envs/plot.yaml"
    params:
        pairs=similarity_pairs(),
    script:
        "../../scripts/measure_agreement.py"


rule plot_per_block:
    input:
        per_block_tables,
    output:
        png=report(
            "results/figures/{dataset}/fig12_per_block_cka.png",
            caption="../report/fig12.rst",
            category="Fig 12: per-block CKA of checkpoints",
        ),
        pdf="results/figures/{dataset}/fig12_per_block_cka.pdf",
    log:
        "logs/figures/{dataset}/fig12.log",
    benchmark:
        "results/benchmarks/figures/{dataset}/fig12.tsv"
    conda:
        "../../envs/plot.yaml"
    script:
        "../../scripts/plot_per_block.py"


rule atlas:
    input:
        unpack(atlas_inputs),
    output:
        html="results/atlas/{dataset}/index.html",
        pairs="results/atlas/{dataset}/pairs.csv",
        png=report(
            "results/figures/{dataset}/atlas_overview.png",
            caption="../report/atlas.rst",
            category="Atlas: every model pair",
        ),
        pdf="results/figures/{dataset}/atlas_overview.pdf",
    log:
        "logs/atlas/{dataset}.log",
    benchmark:
        "results/benchmarks/atlas/{dataset}.tsv"
    conda:
        "../../envs/plot.yaml"
    params:
        pairs=stored_pairs(),
        measures=MEASURES,
        models=atlas_models(),
    script:
        "../../scripts/atlas.py"


rule atlas_shift:
    input:
        [f"results/atlas/{d}/pairs.csv" for d in CONFIG.atlas_datasets],
    output:
        csv=SHIFT_OUTPUTS[0],
        png=SHIFT_OUTPUTS[1],
        pdf=SHIFT_OUTPUTS[2],
    log:
        SHIFT_STEM.replace("results/", "logs/") + ".log",
    conda:
        "../../envs/plot.yaml"
    params:
        datasets=CONFIG.atlas_datasets,
    script:
        "../../scripts/atlas_shift.py"


rule plot_attention_distance:
    input:
        attention_tables,
    output:
        fig3=report(
            "results/figures/{dataset}/fig3_attention_distance.png",
            caption="../report/fig3.rst",
            category="Figs 3-5: attention distance",
        ),
        fig3_pdf="results/figures/{dataset}/fig3_attention_distance.pdf",
        fig4=report(
            "results/figures/{dataset}/fig4_attention_distance_all.png",
            caption="../report/fig4.rst",
            category="Figs 3-5: attention distance",
        ),
        fig4_pdf="results/figures/{dataset}/fig4_attention_distance_all.pdf",
    log:
        "logs/figures/{dataset}/fig3_fig4.log",
    benchmark:
        "results/benchmarks/figures/{dataset}/fig3_fig4.tsv"
    conda:
        "../../envs/plot.yaml"
    params:
        blocks=config["attention"]["blocks"],
        models=attention_models(),
    script:
        "../../scripts/plot_attention_distance.py"


rule plot_head_subsets:
    input:
        head_subset_tables,
    output:
        png=report(
            "results/figures/{dataset}/fig5_head_subset_cka.png",
            caption="../report/fig5.rst",
            category="Figs 3-5: attention distance",
        ),
        pdf="results/figures/{dataset}/fig5_head_subset_cka.pdf",
    log:
        "logs/figures/{dataset}/fig5.log",
    benchmark:
        "results/benchmarks/figures/{dataset}/fig5.tsv"
    conda:
        "../../envs/plot.yaml"
    params:
        models=attention_models(),
    script:
        "../../scripts/plot_head_subsets.py"


rule plot_erf:
    input:
        tables=erf_tables,
        maps=erf_maps,
    output:
        png=report(
            "results/figures/{dataset}/fig6_erf.png",
            caption="../report/fig6.rst",
            category="Fig 6: receptive fields",
        ),
        pdf="results/figures/{dataset}/fig6_erf.pdf",
        sizes="results/figures/{dataset}/fig6_erf_sizes.csv",
    log:
        "logs/figures/{dataset}/fig6.log",
    benchmark:
        "results/benchmarks/figures/{dataset}/fig6.tsv"
    conda:
        "../../envs/plot.yaml"
    params:
        models=erf_models(),
    script:
        "../../scripts/plot_erf.py"


rule plot_skip:
    input:
        skip_tables,
    output:
        ratio=report(
            "results/figures/{dataset}/fig7_skip_ratio.png",
            caption="../report/fig7.rst",
            category="Fig 7: skip connections",
        ),
        ratio_pdf="results/figures/{dataset}/fig7_skip_ratio.pdf",
        cosine=report(
            "results/figures/{dataset}/fig7_skip_cosine.png",
            caption="../report/fig7_cosine.rst",
            category="Fig 7: skip connections",
        ),
        cosine_pdf="results/figures/{dataset}/fig7_skip_cosine.pdf",
    log:
        "logs/figures/{dataset}/fig7.log",
    benchmark:
        "results/benchmarks/figures/{dataset}/fig7.tsv"
    conda:
        "../../envs/plot.yaml"
    params:
        models=skip_models(),
    script:
        "../../scripts/plot_skip.py"


rule plot_localisation:
    input:
        "results/localisation/{dataset}/{model}.parquet",
    output:
        png=report(
            "results/figures/{dataset}/fig9_localisation_{model}.png",
            caption="../report/fig9_10.rst",
            category="Figs 9, 10: localisation",
            labels={"model": "{model}"},
        ),
        pdf="results/figures/{dataset}/fig9_localisation_{model}.pdf",
    log:
        "logs/figures/{dataset}/fig9_{model}.log",
    benchmark:
        "results/benchmarks/figures/{dataset}/fig9_{model}.tsv"
    conda:
        "../../envs/plot.yaml"
    params:
        plot_tokens=config["localisation"]["plot_tokens"],
    script:
        "../../scripts/plot_localisation.py"


rule plot_localisation_summary:
    input:
        localisation_tables,
    output:
        png=report(
            "results/figures/{dataset}/fig10_localisation_summary.png",
            caption="../report/fig9_10.rst",
            category="Figs 9, 10: localisation",
        ),
        pdf="results/figures/{dataset}/fig10_localisation_summary.pdf",
    log:
        "logs/figures/{dataset}/fig10.log",
    benchmark:
        "results/benchmarks/figures/{dataset}/fig10.tsv"
    conda:
        "../../envs/plot.yaml"
    params:
        models=localisation_models(),
    script:
        "../../scripts/plot_localisation_summary.py"


rule plot_probes:
    input:
        probe_tables,
    output:
        fig11=report(
            "results/figures/{dataset}/fig11_probes.png",
            caption="../report/fig11_13.rst",
            category="Figs 11, 13: linear probes",
        ),
        fig11_pdf="results/figures/{dataset}/fig11_probes.pdf",
        fig13=report(
            "results/figures/{dataset}/fig13_probes_models.png",
            caption="../report/fig11_13.rst",
            category="Figs 11, 13: linear probes",
        ),
        fig13_pdf="results/figures/{dataset}/fig13_probes_models.pdf",
    log:
        "logs/figures/{dataset}/fig11_fig13.log",
    benchmark:
        "results/benchmarks/figures/{dataset}/fig11_fig13.tsv"
    conda:
        "../../envs/plot.yaml"
    params:
        models=probe_models(),
    script:
        "../../scripts/plot_probes.py"


# ---- one target per figure (of the analysis dataset): `snakemake fig2 --cores 2 --configfile x.yaml`
rule fig1:
    input:
        fig1_targets(),


rule fig2:
    input:
        fig2_targets(),


rule atlas_all:
    input:
        atlas_targets(),


rule fig3:
    input:
        fig3_targets(),


rule fig4:
    input:
        fig4_targets(),


rule fig5:
    input:
        fig5_targets(),


rule fig6:
    input:
        fig6_targets(),


rule fig7:
    input:
        fig7_targets(),


rule fig9:
    input:
        fig9_targets(),


rule fig10:
    input:
        fig10_targets(),


rule fig11:
    input:
        fig11_targets(),


rule fig12:
    input:
        fig12_targets(),


rule fig13:
    input:
        fig13_targets(),
