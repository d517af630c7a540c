"""Learning from clicks: the adjuster, improvement runs, their tasks and the evaluation."""
