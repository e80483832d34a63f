"""The nowcast: its own training set, candidate and champion, and hourly serving."""
