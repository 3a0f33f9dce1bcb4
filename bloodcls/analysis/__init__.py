"""From runs to conclusions: the study's figures, statistics, the sweep and its report, the ablation table."""
