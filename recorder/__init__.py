"""qos-recorder: record QOS market data (trades, depth, snapshots, K-lines) into QuestDB or SQLite."""

__version__ = "0.1.0"
