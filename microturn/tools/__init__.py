"""microturn.tools (see DESIGN §2)."""
