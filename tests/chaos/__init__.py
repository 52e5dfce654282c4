"""The chaos suite: clients that record everything they send and receive
(`history`), faults injected at random moments, and a checker that proves
the server's promises over the whole recorded history (`checker`)."""
