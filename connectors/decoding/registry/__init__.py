"""Values in the Confluent wire format, with schemas from a schema registry: Avro, Protobuf and
JSON Schema, decoded a schema at a time into Arrow (see README, "Registry formats")."""
