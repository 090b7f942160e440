"""rtvol: real-time volatility signals."""
