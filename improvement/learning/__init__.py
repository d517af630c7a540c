"""Learning from a batch of sessions: the adjuster's inputs (params), what each session teaches (batch),
run totals, and the torch adjuster itself (imported only when a batch is adjusted)."""
