"""Carrier transports: media WebSocket routes, call control (REST) and SMS per carrier."""
