//! fulcrum: a Layer-7 HTTP reverse-proxy load balancer.
