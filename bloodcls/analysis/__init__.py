"""From runs to conclusions: the study's figures, statistics, a sweep's report, the ablation table, trust and a
lab's evaluation. Reports read only what runs left on disk; launching and resuming sweeps is bloodcls.sweeps."""
