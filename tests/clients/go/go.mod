module rpcdns/tests/clients/go

go 1.19
