"""microturn.model (see DESIGN §2)."""
