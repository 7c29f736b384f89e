"""Notification channels (DESIGN §5, Notify): email over SMTP, signed webhooks over HTTP, and
the pure rendering and signing they use."""
