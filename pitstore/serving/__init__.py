"""Online fraud scoring."""
