"""What a label is: answer schema, prompts, taxonomy, vocabularies, compliance rules and shaping."""
