"""The change feed: every committed change set, announced once, followed by each
capability that reacts to events at its own pace."""
