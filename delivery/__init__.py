"""Deliveries to the outside world: the outbox worker, the webhook and SMS
senders, and the election of the one process that runs the worker."""
