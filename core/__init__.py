"""The vocabulary every layer shares; imports nothing of ours."""
