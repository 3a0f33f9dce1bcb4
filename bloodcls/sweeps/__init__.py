"""Sweeps: launching the study's experiments over seeds (and folds) as training processes, resuming a stopped
sweep, watching it (jobs.txt, the progress line) and its lock; the sweep then writes its report (bloodcls.analysis)."""
