"""LeadTrail."""
