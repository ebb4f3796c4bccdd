"""qos-recorder: record QOS market data into QuestDB or SQLite, with gaps detected and filled."""

__version__ = "0.1.0"
