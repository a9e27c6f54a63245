"""HTTP adapters over the data plane: Hugging Face task payloads and OpenAI routes."""
