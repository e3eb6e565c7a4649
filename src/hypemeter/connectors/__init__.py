"""Platform connectors: what each social platform sends and how it maps to Hypemeter events."""
