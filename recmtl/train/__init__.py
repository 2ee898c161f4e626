"""Training: one step (:mod:`.step`), the loop with checkpoints and resume (:mod:`.loop`), row-sparse Adam
(:mod:`.row_adam`)."""
