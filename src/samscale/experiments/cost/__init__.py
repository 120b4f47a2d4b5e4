"""SAM's gain at a fraction of its cost: SGD, SAM and the cheap SAM variants compared per gradient evaluation."""
