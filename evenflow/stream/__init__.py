"""The serving side: the stream engine, online stores, sources and sinks, the HTTP service."""
