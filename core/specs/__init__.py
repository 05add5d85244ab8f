"""Machine-readable specs generated from the wire contracts: JSON Schemas, the AsyncAPI document, the OpenAPI
document of the HTTP gateway. Pure: callers pass versions, partitions and servers."""
