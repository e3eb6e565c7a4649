"""The registry: influencers, campaigns and content, per tenant."""
