"""One renderer per client family.  Each takes an ``Offer`` that the policy
gate produced and turns it into bytes; none of them reads the store."""
