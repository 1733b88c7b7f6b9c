"""The lecture report: every number and claim of the two lectures beside imgcls's own."""
