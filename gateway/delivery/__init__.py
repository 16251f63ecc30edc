"""Delivery: stored deliveries out to subscribers, through transports behind one interface."""
