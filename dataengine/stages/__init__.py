"""Pipeline stages for one sample and the dataset writer: plain functions and small classes, no Ray."""
