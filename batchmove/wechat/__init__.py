"""The async WeChat API client: endpoints, token sources, and the errcode table."""
