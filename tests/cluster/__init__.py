"""The cluster profile as deployed: ``hypemeter serve`` and ``hypemeter worker`` processes
on PostgreSQL, NATS JetStream and Redis, under faults."""
