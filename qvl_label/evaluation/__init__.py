"""Measuring labels against what a catalogue team knows to be right (gold tables)."""
