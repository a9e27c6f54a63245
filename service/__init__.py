"""The serving side: torch-free runtime, data plane and protocol adapters (HTTP, gRPC)."""
