# Filled in by its analysis (see README).
