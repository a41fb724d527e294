"""The customer service: customers, their credit limits and the credit reserved by orders."""
