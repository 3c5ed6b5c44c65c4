"""microturn.training (see DESIGN §2)."""
