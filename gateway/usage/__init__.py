"""Usage accounting: the per-call record, the price catalog and the cost estimate (SPEC section 6)."""
