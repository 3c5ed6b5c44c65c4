"""microturn.scenarios (see DESIGN §2)."""
