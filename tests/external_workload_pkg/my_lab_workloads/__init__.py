"""A user's lab package (test fixture): workloads defined outside lbt_study."""
