"""marketdata: OHLCV candles in PostgreSQL, served over REST and replayed over WebSocket."""

__version__ = "0.1.0"
