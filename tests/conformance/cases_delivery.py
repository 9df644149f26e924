"""Cases on the delivering side: what the next hop answers and what becomes of the mail."""
