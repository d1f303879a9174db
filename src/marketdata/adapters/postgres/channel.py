"""The one NOTIFY channel between the service's processes (see `changes` and `live`)."""

CHANNEL = "marketdata_candles"
FLUSH = "flush"  # a payload: what every process knows of the catalog is to be read again
