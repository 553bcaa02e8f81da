module webrelease.dev/tests/pause

go 1.24
