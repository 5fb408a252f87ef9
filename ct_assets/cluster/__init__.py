"""``make cluster-demo``: the distributed profile's engines started on one host
(:mod:`.engines`, :mod:`.processes`) and the closed loop driven through them
(:mod:`.loop`, :mod:`.demo`)."""
