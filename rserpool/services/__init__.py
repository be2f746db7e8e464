"""Application services a pool element can run (``rserpool pe --service NAME``) and their pool-user sides."""
