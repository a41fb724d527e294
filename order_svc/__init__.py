"""The order service: orders, approved or rejected by the credit saga, and a read model."""
