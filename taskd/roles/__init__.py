"""Roles: composition only. Each wires adapters and services together and runs them."""
