"""What crosses the service's edges, as pure values: the commands every input becomes
(:mod:`.commands`), the mapping layer's requests (:mod:`.requests`) and the WebSocket wire's JSON messages (:mod:`.ws`). No I/O, no clock."""
