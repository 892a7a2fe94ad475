"""A small shop that uses sqlatasks: orders, e-mails, and a card charge that fails once."""
