package server

// CloseShortCircuit cuts the server's short-circuit socket while its HTTP API
// keeps serving, as a socket failing on its own would.
func CloseShortCircuit(s *Server) { s.closeShortCircuit() }
